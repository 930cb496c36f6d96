"""Every split file a run reads: a malformed one gives one `error:` paragraph naming the file and
line, exit status 2, no traceback, and nothing written."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")


def damage(path, how: str) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    if how == "torn":  # a write cut off in the middle of line 3
        path.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    elif how == "not-utf8":
        path.write_bytes(b"".join(lines[:3]) + b'{"prompt": "caf\xe9", "completion": " x"}\n' + b"".join(lines[3:]))
    elif how == "missing-keys":
        path.write_bytes(b"".join(lines[:3]) + b'{"question": "q", "answer": "a"}\n' + b"".join(lines[3:]))
    elif how == "mixed-formats":
        path.write_bytes(lines[0] + b'{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]}\n')
    elif how == "empty":
        path.write_bytes(b"\n")
    else:  # one bad record as line 4
        bad = {"prompt-not-text": b'{"prompt": 5, "completion": " x"}',
               "empty-completion": b'{"prompt": "q", "completion": ""}',
               "control-byte": b'{"prompt": "q\\u0000", "completion": " x"}',
               "too-deep": b"[" * 100_000,
               "chat-without-role": b'{"prompt": [{"content": "q"}], "completion": [{"role": "assistant", "content": "a"}]}',
               "chat-role-typo": b'{"prompt": [{"role": "sytem", "content": "s"}, {"role": "user", "content": "q"}], '
                                 b'"completion": [{"role": "assistant", "content": "a"}]}',
               "chat-roles-swapped": b'{"prompt": [{"role": "assistant", "content": "q"}], '
                                     b'"completion": [{"role": "user", "content": "a"}]}',
               "huge-record": b'{"prompt": "q", "completion": "' + b"x" * (17 * 2**20) + b'"}'}[how]
        path.write_bytes(b"".join(lines[:3]) + bad + b"\n" + b"".join(lines[3:]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("torn", "train.jsonl, line 3: not a JSON object"),
        ("not-utf8", "train.jsonl, line 4: not UTF-8 text"),
        ("missing-keys", "train.jsonl, line 4: a record needs `prompt` and `completion`"),
        ("mixed-formats", "train.jsonl mixes record shapes"),
        ("empty", "train.jsonl holds no examples"),
        ("prompt-not-text", "train.jsonl, line 4: `prompt` is int, not text"),
        ("empty-completion", "train.jsonl, line 4: `completion` is empty"),
        ("control-byte", "train.jsonl, line 4: `prompt` holds the control character '\\x00'"),
        ("too-deep", "train.jsonl, line 4: not a record preprocess.fiqa writes"),
        ("chat-without-role", "train.jsonl, line 4: `prompt` holds a message without a text `role`"),
        ("chat-role-typo", "train.jsonl, line 4: a chat `prompt` holds the roles ['sytem', 'user']"),
        ("chat-roles-swapped", "train.jsonl, line 4: a chat `prompt` holds the roles ['assistant']"),
        ("huge-record", "train.jsonl, line 4: a record longer than 16 MiB"),
    ],
)
def test_a_damaged_split_is_named_with_its_line_and_nothing_is_written(how, expected, tmp_path, fiqa_jsonl_dir,
                                                                      tiny_model_dir, capsys, monkeypatch):
    from recipes.run import main

    data = tmp_path / "data"
    shutil.copytree(fiqa_jsonl_dir, data)
    damage(data / "train.jsonl", how)
    monkeypatch.chdir(tmp_path)
    code = main([SMOKE, "--model_name_or_path", str(tiny_model_dir), "--data_dir", str(data),
                 "--build_smoke_assets", "false", "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert "python -m preprocess.fiqa" in err  # the fix
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--lora_target_modules", "q_proj", "q_prj"], "`lora_target_modules` ['q_prj'] name no module of"),
        (["--output_dir", "a-file/run"], "cannot be written"),
    ],
)
def test_what_is_knowable_before_the_weights_load_is_checked_then(argv, expected, tmp_path, tiny_model_dir, capsys,
                                                                   monkeypatch):
    from recipes.run import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("a file where the output folder should be")
    code = main([SMOKE, "--model_name_or_path", str(tiny_model_dir), *argv])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err
    if "lora" in expected:  # the fix is in the message: the names that do exist
        listed = err.split("Its linear layers are: ")[1]
        assert all(name in listed for name in ("k_proj", "v_proj", "o_proj", "down_proj", "lm_head"))


def test_a_disk_too_small_for_the_checkpoints_is_refused_before_loading(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import shutil as shutil_module
    from collections import namedtuple

    from recipes.run import main

    monkeypatch.chdir(tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))  # 1 MiB free
    assert main([SMOKE, "--model_name_or_path", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert "has 0.00 GiB free; this run needs about" in err and "3 checkpoints of 16,384 trainable parameters" in err
    assert not (tmp_path / "runs" / "smoke").exists()  # refused before anything was written


def test_a_refused_overwrite_leaves_the_finished_run_in_place(tmp_path, fiqa_jsonl_dir, tiny_model_dir, capsys,
                                                              monkeypatch):
    """overwrite_output_dir replaces a finished run only once the new run's data is known to be sound."""
    import json

    from recipes.run import main

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    (run / "checkpoint-10").mkdir(parents=True)
    (run / "run_manifest.json").write_text(json.dumps({"status": "finished"}))
    data = tmp_path / "data"
    shutil.copytree(fiqa_jsonl_dir, data)
    damage(data / "train.jsonl", "torn")
    code = main([SMOKE, "--model_name_or_path", str(tiny_model_dir), "--data_dir", str(data),
                 "--build_smoke_assets", "false", "--output_dir", str(run), "--overwrite_output_dir", "true"])
    assert code == 2 and "not a JSON object" in capsys.readouterr().err
    assert (run / "checkpoint-10").is_dir() and json.loads((run / "run_manifest.json").read_text())["status"] == "finished"


def test_a_model_init_kwargs_key_the_model_does_not_take_is_named(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from recipes.run import main

    monkeypatch.chdir(tmp_path)
    code = main([SMOKE, "--model_name_or_path", str(tiny_model_dir), "--model_init_kwargs", '{"foo": "bar"}'])
    err = capsys.readouterr().err
    assert code == 2 and "`model_init_kwargs` holds a key the model does not take" in err and "foo" in err, err[-2000:]
