"""Composition and validation of the Hydra configs (typos and bad values fail before training)."""

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from growth.config.validation import validate
from growth.errors import ConfigError
from growth.run import check_writable, prepare
from tests.conftest import CONF, compose_cfg


def test_default_config_is_pwmpr_on_digits_mlp():
    cfg = compose_cfg()
    assert (cfg.method.name, cfg.dataset.name, cfg.model.name) == ("pwmpr", "digits", "mlp")
    assert cfg.method.score == "pwmp" and cfg.method.selection == "sample"
    assert cfg.growth.seed_density == 0.01 and cfg.growth.growth_ratio == 1.25
    validate(cfg)


@pytest.mark.parametrize("method", sorted(p.stem for p in (CONF / "method").glob("*.yaml")))
def test_every_method_config_composes_and_validates(method, tmp_path):
    cfg = compose_cfg([f"method={method}"])
    assert cfg.method.name == method
    if method in ("masks", "shuffled_masks"):  # the methods with a mandatory key: the mask to train
        with pytest.raises(ConfigError, match="method.file=None is invalid"):
            validate(cfg)
        from growth.data import build_dataset
        from growth.masks import save_masks
        from growth.models import build_model

        data = build_dataset(cfg.dataset)
        model = build_model(cfg.model, tuple(data.train_x.shape[1:]), data.num_classes)
        save_masks(tmp_path / "m.pt", {n: torch.rand(model.get_parameter(n).shape) < 0.1 for n in model.growable_weights()})
        cfg = compose_cfg([f"method={method}", f"method.file={tmp_path / 'm.pt'}"])
    validate(cfg)
    prepare(cfg)  # the method is registered


def test_unknown_group_option_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["method=pwmpx"])
    assert "pwmpx" in str(err.value) and "pwmpr" in str(err.value)


def test_unknown_key_is_rejected_at_compose_time():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        compose_cfg(["growth.seed_densty=0.1"])
    assert "seed_densty" in str(err.value)


def test_unknown_key_inside_a_group_file_schema_is_rejected():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        compose_cfg(["model.hiden=[3]"])
    assert "hiden" in str(err.value)


def test_wrong_type_is_rejected_at_compose_time():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_cfg(["trainer.epochs=ten"])
    assert "epochs" in str(err.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("growth.seed_density=0", "growth.seed_density"),
        ("growth.seed_density=1.5", "growth.seed_density"),
        ("growth.max_density=0", "growth.max_density"),
        ("growth.growth_ratio=1.0", "growth.growth_ratio"),
        ("growth.temperature=0", "growth.temperature"),
        ("trainer.epochs=-1", "trainer.epochs"),
        ("trainer.lr=0", "trainer.lr"),
        ("growth.timing.mode=sometimes", "growth.timing.mode"),
        ("dataset.name=imagenet1k", "dataset.name"),
        ("model.name=transformer", "model.name"),
        ("trainer.device=tpu", "trainer.device"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert key in str(err.value)


def test_seed_density_above_max_density_is_a_contradiction():
    cfg = compose_cfg(["growth.seed_density=0.2", "growth.max_density=0.1"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "growth.seed_density" in str(err.value) and "growth.max_density" in str(err.value)


def test_unknown_method_name_in_config_is_rejected():
    cfg = compose_cfg(["method.name=magic"])
    with pytest.raises(ConfigError) as err:
        prepare(cfg)
    assert "method.name" in str(err.value) and "pwmpr" in str(err.value)


def test_unwritable_output_root_is_a_config_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as err:
        check_writable(blocker / "run", "output.root")
    assert "output.root" in str(err.value)


@pytest.mark.slow
def test_launch_rejects_bad_values_before_writing_anything(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), f"output.root={tmp_path}", "growth.growth_ratio=1.0", "growth.temperature=0"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "growth.growth_ratio" in proc.stderr and "growth.temperature" in proc.stderr
    assert not list(tmp_path.glob("pwmpr-*")), "no run directory may be created for a rejected config"
