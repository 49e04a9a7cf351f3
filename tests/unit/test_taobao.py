import os
from pathlib import Path

import pytest

from adcast.core.examples import cutoff_time
from adcast.data import taobao

# The public Taobao display-ad samples (taobao_test_data, alimama_sampled_train.txt) are not part
# of the repository: TAOBAO_SAMPLE_DIR names the folder that holds them (.ci/run sets it).
SAMPLES = Path(os.environ.get("TAOBAO_SAMPLE_DIR", "taobao-sample-not-set"))


def row(clk, customer, brand, user, profile, cats, brands):
    return ",".join([clk, "0", "slot", "ad1", "6410", "camp", customer, brand, user, *profile, cats, brands, "3"])


def test_taobao_rows_become_histories_profiles_and_targets(tmp_path):
    path = tmp_path / "sample.csv"
    path.write_text(
        "\n".join(
            [
                row("1", "77", "NULL", "5", ["0", "4", "2", "3", "2", "3", "0", "2"], "4526|4280", "372821|NULL"),
                row("0", "78", "99", "5", ["0", "4", "2", "3", "2", "3", "0", "2"], "4526|4280", "372821|NULL"),
                row("0", "77", "NULL", "6", [""] * 8, "", ""),
            ]
        )
        + "\n"
    )
    world = taobao.load(path)
    profiles = {p["user_id"]: p["attributes"] for p in world["profiles"]}
    assert profiles["tb5"]["gender"] == "2" and profiles["tb5"]["occupation"] == "0"  # 0 is a value here
    assert profiles["tb6"] == {}
    user5 = [e for e in world["events"] if e["user_id"] == "tb5"]
    assert [(e["event_type"], e["category"], e["brand"]) for e in user5[:2]] == [
        ("view", "c4526", "b372821"),
        ("view", "c4280", None),
    ]
    assert [(e["event_type"], e["advertiser_id"]) for e in user5[2:]] == [("click", "adv77"), ("click", "adv78")]
    assert {a["advertiser_id"]: a["name"] for a in world["advertisers"]} == {
        "adv77": "cat=c6410",
        "adv78": "cat=c6410 brand=b99",
    }
    clicked_only = taobao.load(path, targets="clicked")
    assert sorted(e["event_type"] for e in clicked_only["events"] if e["advertiser_id"]) == [
        "click",
        "impression",
        "impression",
    ]


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="set TAOBAO_SAMPLE_DIR to the folder of the Taobao samples")
@pytest.mark.parametrize(
    ("name", "users", "advertisers"), [("taobao_test_data", 5379, 6520), ("alimama_sampled_train.txt", 230, 289)]
)
def test_real_samples_load_and_split_by_user(name, users, advertisers):
    world = taobao.load(SAMPLES / name)
    assert len(world["profiles"]) == users and len(world["advertisers"]) == advertisers
    cut = cutoff_time((e["event_time"] for e in world["events"]), 0.8)
    before = {e["user_id"] for e in world["events"] if e["event_time"] < cut}
    after = {e["user_id"] for e in world["events"] if e["event_time"] >= cut}
    assert len(before & after) <= 1  # whole users on each side (one may straddle the quantile)
    assert len(after) > 0.1 * users
