"""`explore presets`: the bundled model, device and link presets, devices as a table of their headline numbers."""

from __future__ import annotations

from hw_models.registry import load_device
from workloads.model_config import load_model_config

DEVICE_HEADERS = ("name", "kind", "memory GB", "GB/s", "16-bit TFLOP/s", "calibrated", "price", "description")


def _price_text(price) -> str:
    """A preset's published price: '$3.78/h', '$3,999', or '-'."""
    parts = ([f"${price.usd:,.0f}"] if price.usd else []) + (
        [f"${price.usd_per_hour:.2f}/h"] if price.usd_per_hour else [])
    return ", ".join(parts) or "-"


def _print_devices(names: list[str]) -> None:
    """A table of the device presets: kind, memory, bandwidth, 16-bit peak, calibration, price, description."""
    from hw_models.gpu_efficiency import calibration_label

    rows = []
    for name in names:
        device = load_device(name)
        rows.append((name, device.kind, f"{device.memory_bytes / 1e9:.4g}", f"{device.bandwidth_Bps / 1e9:,.0f}",
                     f"{device.peak_flops('bf16') / 1e12:,.1f}", calibration_label(device), _price_text(device.price),
                     device.spec.description))
    widths = [max(len(row[i]) for row in (DEVICE_HEADERS, *rows)) for i in range(len(DEVICE_HEADERS) - 1)]
    right = {2, 3, 4}  # numbers
    print("devices:")
    for row in (DEVICE_HEADERS, *rows):
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))]
        print("  " + "  ".join(cells) + "  " + row[-1])
    print("  (memory GB: what weights, KV cache and activations fit in: the total a GPU's driver reports (what a CUDA "
          "program can allocate, memory.usable_GiB) where its preset gives one, else the datasheet capacity; "
          "16-bit TFLOP/s: dense bf16 math, or the nearest the chip has (fp16 on V100); calibrated: fitted on "
          "its own measured kernels, a sibling's fits, or none (datasheet roofline or the family's analytical "
          "model); sources in hw_models/presets/NAME.yaml)")


def cmd_presets(args) -> int:
    from hw_models.registry import preset_names as device_names
    from workloads.model_config import preset_names as model_names

    if args.kind in (None, "models"):
        print("models:")
        for name in model_names():
            print(f"  {name:<16} {load_model_config(name).source}")
    if args.kind in (None, "devices"):
        _print_devices(device_names())
    if args.kind in (None, "links"):
        from hw_models.link import STORAGE_TIER, calibrated_links, link_names, load_link
        from hw_models.nvls import load_nvls_fit

        fitted = calibrated_links()
        print("links:")
        for name in link_names():
            systems = fitted.get(name)
            how = f"collectives fitted on {', '.join(systems)}" if systems else "datasheet alpha-beta model"
            link = load_link(name)
            peers = (f"custom all-reduce on up to {link.peer_devices} GPUs" if link.peer_devices > 1
                     else "no custom all-reduce")
            if link.multimem:
                nvls = load_nvls_fit()
                peers += (", NVLS all-reduce " if nvls is None else
                          f", NVLS all-reduce fitted on {nvls.provenance['data']['file']}" if nvls.link == name else
                          f", NVLS all-reduce borrowing {nvls.link}'s fitted latency and bandwidth fraction")
            if link.domain_devices is not None:
                peers += f", {link.domain_devices} GPUs a node (more span nodes over the node link)"
            if not link.joins_devices:
                how, peers = STORAGE_TIER, "a host link offloaded weights or KV stream over (--host-link)"
            print(f"  {name:<16} {link.bandwidth_GBps:>6g} GB/s per direction, {how}, {peers}  "
                  f"(sources in hw_models/presets/links/{name}.yaml)")
    return 0
