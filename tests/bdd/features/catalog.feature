@ORCH-3037 @ORCH-3060 @ORCH-3073
Feature: Model catalog lifecycle
  The catalog (POST /v1/catalog/models, GET …/{id}, POST …/verify, POST …/state), served by
  pool-managerd with a control key, records checksummed artifacts and their lifecycle
  Draft → Active → Canary → Deprecated → Retired (ORCH-3037, ORCH-3060–3073).

  Background:
    Given the pool manager is running with an empty catalog
    And a model file "tiny" on disk

  Scenario: A model is registered as Draft, verified, and walked through its lifecycle
    When the operator registers model "tiny"
    Then the response status is 201
    And the response field "state" is "draft"
    When the operator registers model "tiny"
    Then the response status is 200
    When the operator verifies model "tiny"
    Then the response status is 200
    And the response field "verification.result" is "passed"
    When the operator moves model "tiny" to "active"
    Then the response field "state" is "active"
    When the operator moves model "tiny" to "canary"
    Then the response field "state" is "canary"
    When the operator moves model "tiny" to "deprecated"
    Then the response field "state" is "deprecated"
    When the operator moves model "tiny" to "retired"
    Then the response field "state" is "retired"
    When the operator looks up model "tiny" in the catalog
    Then the response status is 200
    And the response field "state" is "retired"

  Scenario: An artifact whose bytes changed fails verification and cannot be activated
    When the operator registers model "tiny"
    And the model file "tiny" is changed on disk
    And the operator verifies model "tiny"
    Then the response status is 200
    And the response field "verification.result" is "mismatch"
    When the operator moves model "tiny" to "active"
    Then the error code is "UNTRUSTED_ARTIFACT"
    When the operator looks up model "tiny" in the catalog
    Then the response field "state" is "draft"

  Scenario: An illegal lifecycle move is refused and changes nothing
    When the operator registers model "tiny"
    And the operator moves model "tiny" to "deprecated"
    Then the response status is 400
    When the operator looks up model "tiny" in the catalog
    Then the response field "state" is "draft"

  Scenario: The catalog needs the control key
    When alice registers model "tiny"
    Then the response status is 403
    And the error code is "FORBIDDEN"
    When an anonymous client sends GET "/v1/catalog/models"
    Then the response status is 401
    When the operator looks up model "tiny" in the catalog
    Then the response status is 404
    And the error code is "NOT_FOUND"
