"""Echoes `text_input` back as raw bytes, cut at byte boundaries that split multi-byte
characters: piece k has 1 + (seed + k) % 4 bytes (TensorRT-LLM convention: `max_tokens` and
`seed` are inputs). Triton copies such pieces raw into its JSON strings."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            data = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
            seed_t = pb_utils.get_input_tensor_by_name(request, "seed")
            seed = int(seed_t.as_numpy().reshape(-1)[0]) if seed_t is not None else 0
            i, k = 0, 0
            while i < len(data):
                n = 1 + (seed + k) % 4
                t = pb_utils.Tensor("text_output", np.array([data[i : i + n]], dtype=np.object_))
                sender.send(pb_utils.InferenceResponse(output_tensors=[t]))
                i, k = i + n, k + 1
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
