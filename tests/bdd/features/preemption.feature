@ORCH-3085 @ORCH-3086
Feature: Preemption
  Waiting lower-priority work may be shed for interactive work (soft preemption, ORCH-3085);
  running work is interrupted only when the adapter declares interruptible decode (hard
  preemption, ORCH-3086). A preempted task always ends with a typed, retriable error.

  Background:
    Given a mock pool with 1 slot

  Scenario: shed-low-priority drops queued batch work for interactive work
    Given the mock engine injects a stall after 1 token
    And the pool queue holds 1 task with full policy "shed-low-priority"
    And the orchestrator is running
    When alice submits task "run" with 5 max tokens
    Then pool "p" has 1 busy slot
    When alice submits task "batch" with 5 max tokens and
      | priority | batch |
    Then the response status is 202
    When alice submits task "batch2" with 5 max tokens and
      | priority | batch |
    Then the response status is 429
    And the response field "policy_label" is "shed-low-priority"
    When alice submits task "inter" with 5 max tokens
    Then the response status is 202
    When alice reads the stream of task "batch" to the end
    Then task "batch" ended with error "ADMISSION_REJECT"
    And the error event of task "batch" mentions "preempted"
    And the error of task "batch" is retriable
    And the metric llorch_preemptions_total with 'mode="soft", engine="mock"' reaches 1

  Scenario: Interruptible decode lets interactive work preempt running batch work
    Given the mock engine streams 20 tokens per second
    And the mock engine declares interruptible decode
    And the orchestrator is running
    When alice submits task "long" with 200 max tokens and
      | priority | batch |
    And alice opens the stream of task "long"
    Then pool "p" has 1 busy slot
    When alice submits task "urgent" with 3 max tokens
    And the open stream of task "long" is read to the end
    Then task "long" ended with error "ADMISSION_REJECT"
    And the error event of task "long" mentions "preempted"
    And the error of task "long" is retriable
    When alice reads the stream of task "urgent" to the end
    Then task "urgent" ended with 3 tokens
    And pool "p" has 0 busy slots
    And the metric llorch_preemptions_total with 'mode="hard"' reaches 1

  Scenario: Without interruptible decode nothing running is interrupted
    Given the mock engine streams 20 tokens per second
    And the orchestrator is running
    When alice submits task "b" with 20 max tokens and
      | priority | batch |
    Then pool "p" has 1 busy slot
    When alice submits task "i" with 2 max tokens
    And alice reads the stream of task "b" to the end
    Then task "b" ended with 20 tokens
    When alice reads the stream of task "i" to the end
    Then task "i" ended with 2 tokens
    And the metric llorch_preemptions_total is 0
