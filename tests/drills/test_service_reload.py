"""The service-reload drill, light form: 4 clients for 6 s against `content-moderation serve` while the
champion moves from version 1 to 2 and is rolled back to 1."""

import pytest

pytest.importorskip("mlflow")

from tests.drills import service_reload  # noqa: E402


def test_the_alias_moves_and_rolls_back_under_load_without_a_failed_request(tmp_path):
    result = service_reload.run(tmp_path, light=True)
    assert result["errors"] == 0, result["error_samples"]
    assert result["requests"] >= 100
    assert result["answers_with_another_version_s_flags"] == 0, result["wrong_samples"]
    # each client: version 1, then 2, then 1 again; never back otherwise
    assert result["versions_in_order_per_client"] == {n: ["1", "2", "1"] for n in range(4)}
    assert result["answers_of_2_before_promotion"] == 0
    assert result["answers_of_1_to_requests_sent_after_the_switch"] == 0
    assert result["answers_of_2_to_requests_sent_after_the_rollback_switch"] == 0
    assert result["seconds_to_all_clients_on_2_after_promotion"] is not None
    assert result["seconds_to_all_clients_on_1_after_rollback"] is not None
    assert result["served_at_end"] == "1" and result["model_swaps"] == 2 and not result["server_log_errors"]
    assert result["lost"] == "nothing" and result["passed"] is True
