@ORCH-2007 @ORCH-3004 @ORCH-3005 @ORCH-3077
Feature: Backpressure and fair admission
  A full queue answers 429 with Retry-After (s) and X-Backoff-Ms, and the body names the
  policy (ORCH-2007, ORCH-3005). Queues are bounded per pool and FIFO within a priority,
  interactive ahead of batch (ORCH-3004). Per-tenant quotas refuse with a typed 429 (ORCH-3077).

  Background:
    Given a mock pool with 1 slot
    And the mock engine injects a stall after 1 token

  Scenario: A full queue with policy reject answers 429 with honest back-off
    Given the pool queue holds 1 task with full policy "reject"
    And the orchestrator is running
    When alice submits task "a" with 5 max tokens
    Then pool "p" has 1 busy slot
    When alice submits task "b" with 5 max tokens
    Then the response status is 202
    When alice submits task "c" with 5 max tokens
    Then the response status is 429
    And the error code is "ADMISSION_REJECT"
    And the response field "policy_label" is "reject"
    And the response field "retriable" is true
    And the response header "Retry-After" is a number of at least 1
    And the response header "X-Backoff-Ms" is a number of at least 100
    And the response field "retry_after_ms" equals the response header "X-Backoff-Ms"
    And the metric llorch_backpressure_events_total with 'policy="reject"' reaches 1
    When alice opens the stream of task "c"
    Then the response status is 404

  Scenario: Policy drop-lru evicts the oldest queued task with a typed error
    Given the pool queue holds 1 task with full policy "drop-lru"
    And the orchestrator is running
    When alice submits task "run" with 5 max tokens
    Then pool "p" has 1 busy slot
    When alice submits task "old" with 5 max tokens
    And alice submits task "new" with 5 max tokens
    Then the response status is 202
    When alice reads the stream of task "old" to the end
    Then task "old" streamed the events "started error"
    And task "old" ended with error "QUEUE_FULL_DROP_LRU"

  Scenario: Interactive work is queued ahead of batch work submitted earlier
    Given the orchestrator is running
    When alice submits task "first" with 5 max tokens
    Then pool "p" has 1 busy slot
    When alice submits task "batch" with 1 max token and
      | priority | batch |
    Then the response field "queue_position" is 0
    When alice submits task "inter" with 1 max token
    Then the response field "queue_position" is 0
    When alice sends GET "/v1/replicasets"
    Then the response status is 403
    When the operator sends GET "/v1/replicasets"
    Then the response field "0.queue_depth" is 2

  Scenario: A tenant over its max_concurrent quota gets a typed 429; others are unaffected
    Given a mock pool with 4 slots
    And tenant "alice" may run at most 2 tasks at once
    And the orchestrator is running
    When alice submits task "a1" with 5 max tokens
    And alice submits task "a2" with 5 max tokens
    And alice submits task "a3" with 5 max tokens
    Then the response status is 429
    And the error code is "ADMISSION_REJECT"
    And the error message mentions "max_concurrent"
    And the response header "Retry-After" is a number of at least 1
    When bob submits task "b1" with 5 max tokens
    Then the response status is 202
    When alice cancels task "a1"
    And alice submits task "a4" with 5 max tokens
    Then the response status is 202

  Scenario: A tenant over its request rate gets a 429 whose back-off is honest
    Given a mock pool with 4 slots
    And tenant "alice" may submit 2.0 requests per second with a burst of 2
    And the orchestrator is running
    When alice submits task "r1" with 1 max token
    And alice submits task "r2" with 1 max token
    And alice submits task "r3" with 1 max token
    Then the response status is 429
    And the error code is "ADMISSION_REJECT"
    And the response header "Retry-After" is "1"
    And the response header "X-Backoff-Ms" is a number of at least 1
    When alice waits for the advertised back-off
    And alice submits task "r3" with 1 max token
    Then the response status is 202
