# The llama-orch node of the NixOS VM tests: the module with test API keys (files in /etc:
# fine for a test VM, never for a real host) and a mock pool; `llamacpp = true` adds a CPU
# llama.cpp pool serving the pinned small model.
{ self }:
{
  llamacpp ? false,
}:
{ pkgs, lib, ... }:
{
  imports = [ self.nixosModules.default ];

  virtualisation = {
    memorySize = 3072;
    cores = 2;
  };

  environment.etc."llama-orch-test/data.key".text = "vm-test-data-key";
  environment.etc."llama-orch-test/control.key".text = "vm-test-control-key";
  environment.systemPackages = [
    pkgs.curl
    pkgs.jq
  ];

  services.llama-orch = {
    enable = true;
    openFirewall = true;
    apiKeys = {
      data = {
        tenant = "vmtest";
        role = "data";
        keyFile = "/etc/llama-orch-test/data.key";
      };
      control = {
        tenant = "ops";
        role = "control";
        keyFile = "/etc/llama-orch-test/control.key";
      };
    };
    pools =
      {
        mock = {
          engine = "mock";
          model.ref = "mock:tiny";
          replicas.mock0 = {
            slots = 4;
            adapterArgs = [
              "--tokens-per-second"
              "20"
            ];
          };
        };
      }
      // lib.optionalAttrs llamacpp {
        smollm2 = {
          engine = "llamacpp";
          model.path = pkgs.llama-orch-model;
          model.sha256 = pkgs.llama-orch-model.sha256;
          ctxMax = 2048;
          allowCpuInference = true;
          replicas.cpu0.slots = 2;
        };
      };
    prometheus.scrape = true;
  };

  services.prometheus.enable = true;
}
