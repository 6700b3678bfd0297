"""A decoupled Triton Python model that streams the tokens of a real model: it forwards each
request to a llama.cpp llama-server (`/completion`, stream=true) and sends one Triton response
per llama-server chunk. It takes either input convention: the vLLM backend's
`sampling_parameters` JSON string, or TensorRT-LLM's direct `max_tokens`/`seed`/... inputs.

When Triton reports the request cancelled (the client closed the HTTP stream), it stops,
closes its llama-server connection and writes `<marker_dir>/cancelled-<request id>`, which is
how the adapter's tests prove the cancel reached the engine."""

import json
import os
import threading
import urllib.request

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = cfg.get("parameters", {})
        self.llama = params["llama_url"]["string_value"]
        self.marker_dir = params["marker_dir"]["string_value"]
        self.outputs = {o["name"] for o in cfg["output"]}
        self.threads = []

    def execute(self, requests):
        for r in requests:
            t = threading.Thread(target=self.run, args=(r,), daemon=True)
            t.start()
            self.threads.append(t)
        return None

    def value(self, request, name):
        t = pb_utils.get_input_tensor_by_name(request, name)
        return None if t is None else t.as_numpy().reshape(-1)[0]

    def response(self, **outputs):
        tensors = []
        for name, v in outputs.items():
            if name not in self.outputs:
                continue
            dtype = np.object_ if isinstance(v, bytes) else np.uint32
            tensors.append(pb_utils.Tensor(name, np.array([v], dtype=dtype)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def run(self, request):
        sender = request.get_response_sender()
        try:
            prompt = self.value(request, "text_input").decode()
            sp = self.value(request, "sampling_parameters")
            if sp is not None:
                s = json.loads(sp.decode())
            else:
                s = {"max_tokens": int(self.value(request, "max_tokens"))}
                for k, cast in (("seed", int), ("temperature", float), ("top_k", int), ("top_p", float)):
                    v = self.value(request, k)
                    if v is not None:
                        s[k] = cast(v)
            body = {
                "prompt": prompt,
                "n_predict": int(s.get("max_tokens", 16)),
                "stream": True,
                "seed": int(s.get("seed", 0)),
                "temperature": float(s.get("temperature", 0.0)),
                "cache_prompt": False,
            }
            for k in ("top_k", "top_p"):
                if k in s:
                    body[k] = s[k]
            want_reason = bool(self.value(request, "return_finish_reason"))
            http = urllib.request.Request(
                self.llama + "/completion",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            n = 0
            with urllib.request.urlopen(http, timeout=120) as resp:
                for line in resp:
                    if request.is_cancelled():
                        with open(os.path.join(self.marker_dir, "cancelled-" + request.request_id()), "w") as f:
                            f.write(str(n))
                        try:
                            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                        except Exception as e:  # noqa: BLE001
                            with open(os.path.join(self.marker_dir, "final-error-" + request.request_id()), "w") as f:
                                f.write(repr(e))
                        return
                    line = line.strip()
                    if not line.startswith(b"data: "):
                        continue
                    ev = json.loads(line[6:])
                    if ev.get("content"):
                        n += 1
                        sender.send(self.response(text_output=ev["content"].encode()))
                    if ev.get("stop"):
                        final = {
                            "text_output": b"",
                            "num_input_tokens": ev.get("tokens_evaluated", 0),
                            "num_output_tokens": ev.get("tokens_predicted", n),
                        }
                        if want_reason:
                            final["finish_reason"] = b"length" if ev.get("stop_type") == "limit" else b"stop"
                        sender.send(self.response(**final), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                        return
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as e:  # noqa: BLE001 - any failure is the request's error
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError("llm: %s" % e)),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    def finalize(self):
        for t in self.threads:
            t.join(timeout=5)
