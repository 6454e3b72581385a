"""explore run's header says where the attention link's times come from, as it says for the tp link and the node
link: a fit's NCCL data, or the link's datasheet."""

from __future__ import annotations

import pytest

from explore.cli import main
from tests.explore.tiny_sweep import write_tiny_model


@pytest.mark.parametrize("link, expected", [
    # nvlink4 is fitted on the NCCL tables of shared/data (DGX H100's, HGX H200's); the node links have none. Their
    # datasheet rates a direction: 18 links x 25 GB/s; 400 Gb/s / 8, below both ends' PCIe 5 x16 (63 GB/s).
    ("nvlink4", "over nvlink4 (450 GB/s a device), fitted on h100-dgx, h200-hgx NCCL data"),
    ("infiniband-ndr", "over infiniband-ndr (50 GB/s a device), on its datasheet alpha-beta model, no measured "
                       "collectives on it"),
])
def test_the_header_says_whether_the_attention_link_is_fitted(tmp_path, capsys, link, expected):
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--requests", "4", "--rate", "4",
                 "--prompt", "32", "--output", "4", "--attention-device", "h20", "--attention-link", link]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert expected in header, header
