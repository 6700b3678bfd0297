@ORCH-3017 @ORCH-3026
Feature: Cancel a task
  POST /v1/tasks/{id}/cancel answers 204 once no further token can be emitted and the engine
  slot is free (ORCH-3017, ORCH-3026); the stream then ends with error CANCELED.

  Background:
    Given a mock pool with 1 slot
    And the mock engine streams 100 tokens per second

  Scenario: Canceling a running task is race-free and frees the slot at once
    Given the orchestrator is running
    When alice submits task "c1" with 500 max tokens
    And alice reads 5 events of task "c1"
    And alice cancels task "c1"
    Then the response status is 204
    And pool "p" has 0 busy slots right away
    When the open stream of task "c1" is read to the end
    Then task "c1" ended with error "CANCELED"
    And task "c1" streamed fewer than 500 tokens
    And reading task "c1" again after 300 ms replays the same events
    And the metric llorch_tasks_canceled_total with 'reason="client_request"' reaches 1

  Scenario: The freed slot takes new work
    Given the orchestrator is running
    When alice submits task "c1" with 500 max tokens
    And alice reads 3 events of task "c1"
    And alice cancels task "c1"
    And alice submits task "c2" with 3 max tokens
    And alice reads the stream of task "c2" to the end
    Then task "c2" ended with 3 tokens

  Scenario: Canceling a queued task removes it without running it
    Given the mock engine injects a stall after 1 token
    And the orchestrator is running
    When alice submits task "running" with 5 max tokens
    Then pool "p" has 1 busy slot
    When alice submits task "waiting" with 5 max tokens
    And alice cancels task "waiting"
    Then the response status is 204
    When alice reads the stream of task "waiting" to the end
    Then task "waiting" streamed the events "started error"
    And task "waiting" ended with error "CANCELED"

  Scenario: A client that goes away cancels its task
    Given the orchestrator is running
    When alice submits task "gone" with 400 max tokens
    And alice reads 3 events of task "gone"
    And the client of task "gone" goes away
    Then pool "p" has 0 busy slots
    And the metric llorch_tasks_canceled_total with 'reason="client_disconnect"' reaches 1

  Scenario: Canceling a finished task is 409, an unknown one 404
    Given the orchestrator is running
    When alice submits task "done" with 2 max tokens
    And alice reads the stream of task "done" to the end
    And alice cancels task "done"
    Then the response status is 409
    And the error code is "TASK_FINISHED"
    When alice cancels task "no-such-task"
    Then the response status is 404
    And the error code is "NOT_FOUND"
