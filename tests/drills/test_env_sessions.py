"""The environment-sessions drill, light form: 8 concurrent sessions x 10 episodes against the served
environment (its own process), every episode equal to the same task and seed played alone."""

from tests.drills import env_sessions


def test_concurrent_sessions_never_see_each_other(tmp_path):
    result = env_sessions.run(tmp_path, light=True)
    assert result["episodes"] == 80 and result["episodes_by_transport"] == {"websocket": 40, "http": 40}
    assert result["errors"] == 0, (result["client_errors"], result["server_errors"])
    assert result["cross_talk_episodes"] == 0, result["mismatched"]
    assert not result["state_mismatch"] and result["distinct_episode_ids"] == 80
    assert result["steps"] >= 80 * 10  # every episode played to its end (10-15 items each)
    assert result["lost"] == "nothing" and result["passed"] is True


def test_the_comparison_sees_another_session_s_episode():
    """The check itself: an episode's steps differ from any other task or seed's, so a session served
    another's items (or a reward graded on them) could not pass as its own."""
    first = env_sessions.alone(*env_sessions._job(0, 0))
    assert first == env_sessions.alone(*env_sessions._job(0, 0))  # the same task and seed: the same steps
    for other in (env_sessions._job(0, 1), env_sessions._job(1, 0), (env_sessions._job(0, 0)[0], 1)):
        assert env_sessions.alone(*other)[0] != first[0], other
