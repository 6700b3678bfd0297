# The NixOS appliance (packages.<system>.appliance-image, nixosConfigurations.appliance-*):
# llama-orch on port 8080 with a CPU llama.cpp pool serving the pinned small model and a mock
# pool. The data and control keys are generated on first boot under /var/lib/llama-orch-keys
# (never in the image); read them there as root.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  keyDir = "/var/lib/llama-orch-keys";
in
{
  imports = [ "${modulesPath}/profiles/qemu-guest.nix" ];

  boot.loader.grub.device = lib.mkDefault "/dev/vda";
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
    autoResize = true;
  };
  boot.growPartition = true;
  networking.hostName = "llama-orch";
  services.getty.autologinUser = lib.mkDefault null;
  system.stateVersion = "25.11";

  systemd.services.llama-orch-keys = {
    description = "Generate llama-orch's API keys on first boot";
    wantedBy = [ "multi-user.target" ];
    before = [ "orchestratord.service" ];
    requiredBy = [ "orchestratord.service" ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      UMask = "0077";
    };
    script = ''
      mkdir -p ${keyDir}
      for k in data control; do
        [ -s ${keyDir}/$k.key ] || ${pkgs.openssl}/bin/openssl rand -hex 24 > ${keyDir}/$k.key
      done
    '';
  };

  services.llama-orch = {
    enable = true;
    openFirewall = true;
    apiKeys = {
      data = {
        tenant = "default";
        role = "data";
        keyFile = "${keyDir}/data.key";
      };
      control = {
        tenant = "ops";
        role = "control";
        keyFile = "${keyDir}/control.key";
      };
    };
    pools = {
      smollm2 = {
        engine = "llamacpp";
        model.path = pkgs.llama-orch-model;
        model.sha256 = pkgs.llama-orch-model.sha256;
        ctxMax = 2048;
        allowCpuInference = true;
        replicas.cpu0.slots = 2;
      };
      mock = {
        engine = "mock";
        model.ref = "mock:tiny";
        replicas.mock0 = {
          slots = 4;
          adapterArgs = [
            "--tokens-per-second"
            "50"
          ];
        };
      };
    };
  };
}
