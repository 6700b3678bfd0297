@ORCH-3035 @ORCH-3036
Feature: API keys, roles and tenant isolation
  API keys gate the data and control planes with separate roles (ORCH-3035); a tenant sees and
  cancels only its own tasks and sessions (ORCH-3036).

  Background:
    Given a mock pool with 2 slots
    And the orchestrator is running

  Scenario Outline: Missing, unknown and wrong-role keys are refused with the envelope
    When <caller> sends GET "<path>"
    Then the response status is <status>
    And the error code is "<code>"

    Examples:
      | caller                       | path                | status | code            |
      | an anonymous client          | /v1/capabilities    | 401    | UNAUTHENTICATED |
      | a client with an unknown key | /v1/capabilities    | 401    | UNAUTHENTICATED |
      | alice                        | /v1/replicasets     | 403    | FORBIDDEN       |
      | alice                        | /v1/pools/p/health  | 403    | FORBIDDEN       |
      | the operator                 | /v1/sessions/any    | 403    | FORBIDDEN       |
      | an anonymous client          | /v1/sessions/any    | 401    | UNAUTHENTICATED |

  Scenario: The control key cannot submit tasks, a data key cannot drain
    When the operator submits task "x" with 2 max tokens
    Then the response status is 403
    And the error code is "FORBIDDEN"
    When alice drains pool "p" with a deadline of 1000 ms
    Then the response status is 403
    And the error code is "FORBIDDEN"
    And pool "p" has 0 busy slots right away

  Scenario: Another tenant can neither read nor cancel a task
    When alice submits task "mine" with 5 max tokens
    And bob opens the stream of task "mine"
    Then the response status is 404
    And the error code is "NOT_FOUND"
    When bob cancels task "mine"
    Then the response status is 404
    When alice reads the stream of task "mine" to the end
    Then task "mine" ended with 5 tokens

  Scenario: Another tenant can neither see nor delete a session
    When alice completes turn "t1" of session "private" with 2 max tokens
    And bob looks up session "private"
    Then the response status is 404
    When bob deletes session "private"
    Then the response status is 404
    When alice looks up session "private"
    Then the response status is 200
    And the response field "turns" is 1
