# llama.cpp's llama-server, built from the sources pinned in nix/pins.json: the llama.cpp tree
# vendored in the llama-cpp-python sdist, the same tree `cargo xtask fetch-engine` builds for the
# test suite (pool-managerd provision-engine), with the same CMake flags. CPU by default;
# `cudaSupport = true` builds the CUDA backend from the given `cudaPackages`.
{
  lib,
  stdenv,
  fetchurl,
  cmake,
  ninja,
  cudaSupport ? false,
  cudaPackages ? { },
  autoAddDriverRunpath ? null,
}:
let
  pins = import ./pins.nix;
  effectiveStdenv = if cudaSupport then cudaPackages.backendStdenv else stdenv;
in
effectiveStdenv.mkDerivation {
  pname = "llama-orch-llama-cpp" + lib.optionalString cudaSupport "-cuda";
  inherit (pins.llamaCpp) version;

  src = fetchurl pins.llamaCpp.src;
  inherit (pins.llamaCpp) sourceRoot;

  nativeBuildInputs =
    [
      cmake
      ninja
    ]
    ++ lib.optionals cudaSupport [
      cudaPackages.cuda_nvcc
      autoAddDriverRunpath
    ];

  buildInputs = lib.optionals cudaSupport (
    with cudaPackages;
    [
      cuda_cudart
      cuda_cccl
      libcublas
    ]
  );

  cmakeFlags =
    [
      (lib.cmakeBool "GGML_NATIVE" false)
      (lib.cmakeBool "BUILD_SHARED_LIBS" false)
      (lib.cmakeBool "LLAMA_BUILD_TESTS" false)
      (lib.cmakeBool "LLAMA_BUILD_EXAMPLES" false)
      # No network in the build: no web UI download, no TLS or curl (a loopback engine).
      (lib.cmakeBool "LLAMA_BUILD_UI" false)
      (lib.cmakeBool "LLAMA_USE_PREBUILT_UI" false)
      (lib.cmakeBool "LLAMA_OPENSSL" false)
      (lib.cmakeBool "LLAMA_CURL" false)
      (lib.cmakeBool "GGML_CUDA" cudaSupport)
    ]
    ++ lib.optionals cudaSupport [
      (lib.cmakeFeature "CMAKE_CUDA_ARCHITECTURES" cudaPackages.flags.cmakeCudaArchitecturesString)
    ];

  ninjaFlags = [ "llama-server" ];

  installPhase = ''
    runHook preInstall
    install -Dm755 bin/llama-server $out/bin/llama-server
    runHook postInstall
  '';

  meta = {
    description = "llama.cpp's llama-server as pinned by llama-orch (nix/pins.json)";
    homepage = "https://github.com/ggml-org/llama.cpp";
    license = lib.licenses.mit;
    mainProgram = "llama-server";
    platforms = lib.platforms.linux;
  };
}
