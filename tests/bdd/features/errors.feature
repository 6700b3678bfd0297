@ORCH-2006 @ORCH-3093 @ORCH-3014 @ORCH-3015 @ORCH-3016
Feature: Error taxonomy
  Every non-2xx answer is the error envelope {code, message, correlation_id, …} with a typed
  code (ORCH-2006, ORCH-3093); admission validates before enqueue: ctx within the model limit
  and prompt + max_tokens within ctx (ORCH-3014, ORCH-3015); engine faults and the watchdog
  end a stream with a typed error and free the slot (ORCH-3016).

  Background:
    Given a mock pool with 1 slot

  Scenario Outline: Bad submissions are refused with INVALID_PARAMS and change nothing
    Given the orchestrator is running
    When alice submits task "bad" with <max_tokens> max tokens and
      | <field> | <value> |
    Then the response status is 400
    And the error code is "INVALID_PARAMS"
    And the metric llorch_tasks_enqueued_total is 0
    And the metric llorch_queue_depth is 0

    Examples:
      | what                              | max_tokens | field       | value          |
      | ctx above the model limit         | 5          | ctx         | 8192           |
      | prompt + max_tokens above ctx     | 600        | ctx         | 512            |
      | zero max_tokens                   | 0          | ctx         | 512            |
      | an unknown field                  | 5          | temprature  | 0.5            |
      | a temperature above 2             | 5          | temperature | 2.5            |
      | a top_p of 0                      | 5          | top_p       | 0              |
      | a chat input on a completion      | 5          | messages    | []             |
      | a model no pool serves            | 5          | model_ref   | "hf:nope/nope" |
      | an engine no pool runs            | 5          | engine      | "vllm"         |
      | an unsupported workload           | 5          | workload    | "embedding"    |
      | a malformed task id               | 5          | task_id     | "bad id/.."    |
      | another tenant's name             | 5          | tenant      | "bob"          |
      | max_tokens of the wrong type      | 5          | max_tokens  | "many"         |

  Scenario: Malformed JSON is INVALID_PARAMS with an echoed correlation id
    Given the orchestrator is running
    When alice submits the raw body
      """
      {"workload":
      """
    Then the response status is 400
    And the error code is "INVALID_PARAMS"

  Scenario: A task id in use cannot be submitted twice
    Given the orchestrator is running
    When alice submits task "dup" with 2 max tokens
    And alice submits task "dup" with 2 max tokens
    Then the response status is 400
    And the error code is "INVALID_PARAMS"
    And the error message mentions "already in use"

  Scenario: Unknown routes get the envelope too
    Given the orchestrator is running
    When an anonymous client sends GET "/v2/tasks"
    Then the response status is 404
    And the error code is "NOT_FOUND"

  Scenario Outline: Engine faults end the stream with a typed error and free the slot
    Given the mock engine injects <fault> after 2 tokens
    And the idle timeout is 500 ms
    And the orchestrator is running
    When alice submits task "f" with 10 max tokens
    And alice reads the stream of task "f" to the end
    Then task "f" streamed the events "started metrics token token error"
    And task "f" ended with error "<code>"
    And the error event of task "f" has "engine" = "mock"
    And pool "p" has 0 busy slots
    And the metric llorch_tasks_failed_total with 'code="<code>"' reaches 1

    Examples:
      | fault        | code           |
      | an error     | INTERNAL       |
      | a disconnect | WORKER_RESET   |
      | a stall      | DECODE_TIMEOUT |

  Scenario: The wall-clock watchdog aborts a slow job with DECODE_TIMEOUT
    Given the mock engine streams 20 tokens per second
    And the wall timeout is 300 ms
    And the orchestrator is running
    When alice submits task "slow" with 100 max tokens
    And alice reads the stream of task "slow" to the end
    Then task "slow" ended with error "DECODE_TIMEOUT"
    And the error event of task "slow" mentions "wall"
    And pool "p" has 0 busy slots
