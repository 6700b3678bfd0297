@ORCH-3021 @ORCH-3022 @ORCH-3099
Feature: Short-lived sessions
  GET /v1/sessions/{id} shows {ttl_ms_remaining, turns, kv_bytes, kv_warmth}; DELETE evicts.
  Sessions are bounded in turns (ORCH-3021, ORCH-3022) and budgets (ORCH-3099), and belong to
  one tenant.

  Background:
    Given a mock pool with 2 slots

  Scenario: Turns are counted and the session's KV is warm
    Given the orchestrator is running
    When alice completes turn "s1" of session "chat-1" with 2 max tokens
    And alice completes turn "s2" of session "chat-1" with 2 max tokens
    And alice looks up session "chat-1"
    Then the response status is 200
    And the response field "turns" is 2
    And the response field "kv_warmth" is true
    And the response field "ttl_ms_remaining" counts at least 1
    And the response field "kv_bytes" counts at least 0

  Scenario: A session refuses turns beyond its limit
    Given sessions allow at most 2 turns
    And the orchestrator is running
    When alice completes turn "s1" of session "chat-2" with 2 max tokens
    And alice completes turn "s2" of session "chat-2" with 2 max tokens
    And alice submits task "s3" with 2 max tokens and
      | session_id | chat-2 |
    Then the response status is 400
    And the error code is "INVALID_PARAMS"
    And the error message mentions "turns"

  Scenario: Deleting a session evicts it, and a new one can start under the same id
    Given sessions allow at most 1 turn
    And the orchestrator is running
    When alice completes turn "s1" of session "chat-3" with 2 max tokens
    And alice deletes session "chat-3"
    Then the response status is 204
    When alice looks up session "chat-3"
    Then the response status is 404
    And the error code is "NOT_FOUND"
    When alice submits task "s2" with 2 max tokens and
      | session_id | chat-3 |
    Then the response status is 202

  Scenario: A session's token budget is enforced and surfaced
    Given sessions have a token budget of 40
    And the orchestrator is running
    When alice submits task "b1" with 10 max tokens and
      | session_id | budget   |
      | prompt     | hello    |
    Then the response status is 202
    And the response header "X-Tokens-Budget-Remaining" is "28"
    When alice reads the stream of task "b1" to the end
    Then the metrics event of task "b1" has "tokens_budget_remaining" = 28
    When alice looks up session "budget"
    Then the response field "tokens_budget_remaining" is 28
    When alice submits task "b2" with 30 max tokens and
      | session_id | budget |
      | prompt     | hello  |
    Then the response status is 400
    And the error code is "INVALID_PARAMS"
    And the error message mentions "budget"
