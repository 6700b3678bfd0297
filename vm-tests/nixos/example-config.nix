# The configuration of docs/nixos.md's example: a GPU llama.cpp pool and a CPU pool, API keys
# from files, Prometheus scraping. The flake's checks.module-eval evaluates it and writes out
# the generated units; tests/nix checks that docs/nixos.md shows this same example.
{ pkgs, ... }:
{
  # CUDA is unfree.
  nixpkgs.config.allowUnfree = true;

  services.llama-orch = {
    enable = true;
    openFirewall = true;
    apiKeys = {
      acme = {
        tenant = "acme";
        role = "data";
        keyFile = "/run/secrets/llama-orch/acme";
      };
      ops = {
        tenant = "ops";
        role = "control";
        keyFile = "/run/secrets/llama-orch/ops";
      };
    };
    pools = {
      llama3-8b = {
        engine = "llamacpp";
        model.url = "https://huggingface.co/QuantFactory/Meta-Llama-3-8B-Instruct-GGUF/resolve/main/Meta-Llama-3-8B-Instruct.Q4_K_M.gguf";
        # Placeholder: put the file's real digest here (`pool-managerd digest FILE`).
        model.sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        ctxMax = 8192;
        replicas.gpu0 = {
          devices = [ 0 ];
          slots = 4;
        };
        settings.queue.full_policy = "drop-lru";
      };
      smollm2 = {
        engine = "llamacpp";
        model.path = pkgs.llama-orch-model;
        model.sha256 = pkgs.llama-orch-model.sha256;
        ctxMax = 2048;
        allowCpuInference = true;
        replicas.cpu0.slots = 2;
      };
    };
    settings = {
      queue = {
        capacity = 512;
        full_policy = "reject";
      };
      timeouts.first_token_ms = 60000;
    };
    prometheus.scrape = true;
  };

  services.prometheus.enable = true;
}
