@ORCH-3095 @ORCH-3096 @ORCH-3044
Feature: Control plane: capabilities, health, replica sets, drain, reload
  GET /v1/capabilities reports api_version (= the OpenAPI document's info.version), engines
  and ctx_max (ORCH-3095, ORCH-3096; the document is served, ORCH-3044; the caller's rate
  limits are checked in orchestratord's contracts_fresh test). Pool health,
  replica sets, drain and reload are control-key operations (SPEC §2).

  Background:
    Given a mock pool with 1 slot

  Scenario: Capabilities match the served OpenAPI document
    Given the orchestrator is running
    When alice sends GET "/v1/capabilities"
    Then the response status is 200
    And the capabilities' api_version is the OpenAPI document's info.version
    And the response field "engines" is ["mock"]
    And the response field "ctx_max" is 1024

  Scenario: Pool health and replica sets describe the pool
    Given a mock pool with 3 slots
    And the orchestrator is running
    When the operator sends GET "/v1/pools/p/health"
    Then the response status is 200
    And the response field "live" is true
    And the response field "ready" is true
    And the response field "draining" is false
    When the operator sends GET "/v1/replicasets"
    Then the response field "0.pool_id" is "p"
    And the response field "0.model_ref" is "mock:tiny"
    And the response field "0.replicas.0.slots_total" is 3
    And the response field "0.replicas.0.status" is "ready"
    When the operator sends GET "/v1/pools/nope/health"
    Then the response status is 404
    And the error code is "NOT_FOUND"

  Scenario: Drain refuses new work, lets running work finish, fails queued work
    Given the mock engine streams 10 tokens per second
    And the orchestrator is running
    When alice submits task "short" with 5 max tokens
    And alice submits task "waiting" with 5 max tokens
    And the operator drains pool "p" with a deadline of 3000 ms
    Then the response status is 202
    And the response field "draining" is true
    And the response field "ready" is false
    When alice submits task "late" with 5 max tokens
    Then the response status is 503
    And the error code is "POOL_UNAVAILABLE"
    When alice reads the stream of task "short" to the end
    Then task "short" ended with 5 tokens
    When alice reads the stream of task "waiting" to the end
    Then task "waiting" streamed the events "started error"
    And task "waiting" ended with error "POOL_UNAVAILABLE"

  Scenario: Work still running at the drain deadline is canceled and its slot freed
    Given the mock engine injects a stall after 1 token
    And the orchestrator is running
    When alice submits task "stuck" with 5 max tokens
    Then pool "p" has 1 busy slot
    When the operator drains pool "p" with a deadline of 100 ms
    Then the response status is 202
    When alice reads the stream of task "stuck" to the end
    Then task "stuck" ended with error "POOL_UNAVAILABLE"
    And pool "p" has 0 busy slots
    And the metric llorch_tasks_canceled_total with 'reason="drain"' reaches 1

  Scenario: A malformed drain request is refused and changes nothing
    Given the orchestrator is running
    When the operator sends POST "/v1/pools/p/drain" with
      """
      {"deadline": 1}
      """
    Then the response status is 400
    And the error code is "INVALID_PARAMS"
    When the operator sends GET "/v1/pools/p/health"
    Then the response field "draining" is false

  Scenario: Reload without a pool manager is refused, and the pool keeps serving
    Given the orchestrator is running
    When the operator reloads pool "p" with model "mock:other"
    Then the response status is 503
    And the error code is "POOL_UNAVAILABLE"
    And the error message mentions "llorch serve"
    When the operator reloads pool "p" with model ""
    Then the response status is 400
    And the error code is "INVALID_PARAMS"
    When alice submits task "after" with 2 max tokens
    And alice reads the stream of task "after" to the end
    Then task "after" ended with 2 tokens
    When the operator sends GET "/v1/replicasets"
    Then the response field "0.model_ref" is "mock:tiny"
