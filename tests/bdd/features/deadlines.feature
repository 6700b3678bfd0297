@ORCH-3004 @ORCH-3016
Feature: Deadlines
  Deadlines are scheduled earliest-first with a feasibility check: an infeasible deadline is
  DEADLINE_UNMET before enqueue; a feasible one surfaces on_time_probability; nothing waits
  past its deadline or the queue timeout (SPEC §3; ORCH-3004 queues, ORCH-3016 watchdog).

  Background:
    Given a mock pool with 1 slot

  Scenario: A deadline that cannot be met is refused before enqueue
    Given the orchestrator is running
    When alice submits task "now" with 5 max tokens and
      | deadline_ms | 0 |
    Then the response status is 400
    And the error code is "DEADLINE_UNMET"
    And the metric llorch_tasks_enqueued_total is 0

  Scenario: Once the replica's rate is measured, a too-tight deadline is refused
    Given the mock engine streams 100 tokens per second
    And the orchestrator is running
    When alice submits task "warm" with 20 max tokens
    And alice reads the stream of task "warm" to the end
    And alice submits task "tight" with 50 max tokens and
      | deadline_ms | 100 |
    Then the error code is "DEADLINE_UNMET"
    And the metric llorch_tasks_enqueued_total is 1

  Scenario: A feasible deadline carries on_time_probability
    Given the orchestrator is running
    When alice submits task "loose" with 2 max tokens and
      | deadline_ms | 30000 |
    Then the response status is 202
    When alice reads the stream of task "loose" to the end
    Then the started event of task "loose" has "on_time_probability" above 0.9
    And the metrics event of task "loose" has "on_time_probability" above 0.9
    And the metrics event of task "loose" has no "tokens_budget_remaining"
    And task "loose" ended with 2 tokens
    And the metric llorch_deadlines_met_ratio with 'priority="interactive"' reaches 1

  Scenario: Queued work that outlives its deadline or the queue timeout fails, typed
    Given the mock engine injects a stall after 1 token
    And the queue timeout is 2500 ms
    And the orchestrator is running
    When alice submits task "hog" with 5 max tokens
    And alice submits task "deadline" with 5 max tokens and
      | deadline_ms | 1500 |
    Then the response status is 202
    When alice submits task "waits" with 5 max tokens
    And alice reads the stream of task "deadline" to the end
    Then task "deadline" ended with error "DEADLINE_UNMET"
    When alice reads the stream of task "waits" to the end
    Then task "waits" streamed the events "started error"
    And task "waits" ended with error "ADMISSION_REJECT"
    And the metric llorch_queue_depth is 0
