"""Streams two tokens, then fails: Triton turns the error into a final `data: {"error":...}`
event on the HTTP 200 stream."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            for i in range(2):
                t = pb_utils.Tensor("text_output", np.array([("tok%d " % i).encode()], dtype=np.object_))
                sender.send(pb_utils.InferenceResponse(output_tensors=[t]))
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError("boom: model failed at token 2")),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )
        return None
