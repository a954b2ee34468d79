"""FSDP2 (2 CPU processes over gloo) on a wavelength + time-series + time/location model."""

from pretrain_utils import ROOT, launch


def test_fsdp2_shards_and_trains_a_mixed_sensor_time_series_model(tmp_path):
    worker = ROOT / "tests" / "workers" / "fsdp_any_sensor_check.py"
    result = launch(worker, tmp_path / "state")
    assert "FSDP_ANY_SENSOR_OK world=2" in result.stdout, (
        result.stdout[-2000:] + result.stderr[-4000:]
    )
    assert len(list((tmp_path / "state").glob("pytorch_model_fsdp_0/*.distcp"))) == 2
