@ORCH-2001 @ORCH-2002 @ORCH-3045
Feature: Enqueue a task and stream its tokens
  A client submits a task to the queue (POST /v1/tasks) and reads its Server-Sent Events:
  started, metrics, token*, end, in that order, with exactly these event names.
  Requirements: ORCH-2001 (submit), ORCH-2002 (stream framing), ORCH-3045 (seed).

  Background:
    Given a mock pool with 2 slots
    And the orchestrator is running

  Scenario: A submitted task is accepted with its stream's location and correlation id
    When alice submits task "t1" with 6 max tokens and correlation id "corr-bdd-1"
    Then the response status is 202
    And the response header "Location" is "/v1/tasks/t1/stream"
    And the response header "X-Correlation-Id" is "corr-bdd-1"
    And the response field "task_id" is "t1"
    And the response field "queue_position" is 0

  Scenario: The stream carries started, metrics, tokens and end in contract order
    When alice submits task "t2" with 6 max tokens
    And alice reads the stream of task "t2" to the end
    Then task "t2" streamed the events "started metrics token*6 end"
    And the token events of task "t2" are numbered from 0 without gaps
    And task "t2" ended with 6 tokens
    And the started event of task "t2" has "queue_position" = 0
    And the metric llorch_tokens_out_total with 'pool_id="p"' reaches 6

  Scenario: A finished task's stream replays the same log
    When alice submits task "t3" with 4 max tokens
    And alice reads the stream of task "t3" to the end
    Then reading task "t3" again after 50 ms replays the same events

  Scenario: The server assigns a UUID task id, and the same seed gives the same tokens
    When alice submits an unnamed task with seed 42 and 8 max tokens
    Then the response field "task_id" holds a UUID
    When alice reads the stream of the unnamed task to the end as "first"
    And alice submits an unnamed task with seed 42 and 8 max tokens
    And alice reads the stream of the unnamed task to the end as "second"
    Then "first" and "second" streamed the same tokens

  Scenario: Streaming a task nobody submitted is 404 with the error envelope
    When alice opens the stream of task "never-submitted"
    Then the response status is 404
    And the error code is "NOT_FOUND"
