"""The server's input door over real HTTP (FastAPI TestClient): episodes stay with the client that opened
them, and every top-level field of every route refuses bad input with a short 4xx, never a 500 and
never an echo of a big input."""

import json

import pytest
from fastapi.testclient import TestClient

from moderation_env.http_input import MAX_BODY_BYTES
from moderation_env.server import EPISODE_COOKIE, EPISODE_HEADER, create_moderation_app

BIG = "Z" * 100_000  # a marker that must never come back
SURROGATES = {"high": "\ud800", "low": "\udfff", "reversed pair": "\udc00\ud83d", "high then text": "a\udbffb",
              "emoji half": "\ud83d", "pair then low": "\ud83d\ude00\ude00"}
FORMAT_ONLY = ["\u200b\u200b", "\u2060", "\ufeff", "\u200e\u202e", "\u00ad"]
WRONG_TYPES = [None, 0, -1, 1.5, True, [], ["x"], {}, {"a": 1}]


@pytest.fixture(scope="module")
def app():
    return create_moderation_app()


@pytest.fixture
def client(app):
    return TestClient(app, raise_server_exceptions=False)


def raw(obj) -> bytes:
    """JSON with surrogates written as \\uXXXX escapes, as any JSON client can send them."""
    return json.dumps(obj, ensure_ascii=True).encode()


def open_episode(client, seed=5) -> dict:
    r = client.post("/reset", json={"task": "single-label-classify", "seed": seed})
    assert r.status_code == 200
    return r.json()["observation"]


def action_for(obs, **over) -> dict:
    return {"content_id": obs["content"]["id"], "labels": ["clean"], "action": "approve", "confidence": 0.5, **over}


def refused(r, *, big: bool = False) -> None:
    """A clean refusal: 4xx, JSON with a short detail, no echo of a big input."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert len(r.content) < 2500, len(r.content)
    assert "detail" in r.json()
    if big:
        assert "ZZZZZZZZZZ" not in r.text


# ------------------------------------------------------------------ ownership


def test_another_clients_id_on_reset_is_refused_and_the_owner_keeps_its_episode(app):
    owner, other = TestClient(app), TestClient(app)
    obs = open_episode(owner)
    eid = obs["episode_id"]
    r = other.post("/reset", json={"task": "ad-policy-compliance", "episode_id": eid})
    assert r.status_code == 409 and "belongs to the client that opened it" in r.json()["detail"]
    r = other.post("/reset", json={"episode_id": "my-own-name"})
    assert r.status_code == 422 and "server names each HTTP episode" in r.json()["detail"]
    state = owner.get("/state", params={"episode_id": eid}).json()
    assert state["task"] == "single-label-classify" and state["served_ids"] == [obs["content"]["id"]]
    r = owner.post("/step", json={"episode_id": eid, "action": action_for(obs)})
    assert r.status_code == 200 and r.json()["reward"] > -1 and r.json()["observation"]["last_error"] is None


def test_episode_ids_are_unguessable_and_only_the_opener_holds_one(app):
    client = TestClient(app)
    ids = {open_episode(client, seed)["episode_id"] for seed in range(40)}
    assert len(ids) == 40 and all(len(i) == 32 for i in ids)
    stranger = TestClient(app)  # no cookie, no id: a bare action names no episode
    obs = open_episode(client)
    r = stranger.post("/step", json=action_for(obs))
    assert r.status_code == 422 and "episode_id is required" in r.json()["detail"]
    r = stranger.post("/step", json=action_for(obs), headers={EPISODE_HEADER: "x" * 32})
    assert r.status_code == 404
    assert client.get("/state").json()["step_count"] == 0  # the cookie's episode, untouched


# ------------------------------------------------------------------ bad input, every field of every route


def step_rich(client, field, value):
    obs = open_episode(client)
    body = {"episode_id": obs["episode_id"], "action": action_for(obs), field: value}
    return client.post("/step", content=raw(body), headers={"content-type": "application/json"})


def step_bare(client, field, value):
    obs = open_episode(client)  # the cookie names the episode
    return client.post("/step", content=raw({**action_for(obs), field: value}),
                       headers={"content-type": "application/json"})


def reset(client, field, value):
    return client.post("/reset", content=raw({"task": "single-label-classify", field: value}),
                       headers={"content-type": "application/json"})


DOORS = [(reset, f) for f in ("task", "seed", "episode_id", "unknown_field")] + \
        [(step_rich, f) for f in ("episode_id", "action", "timeout_s", "request_id", "unknown_field")] + \
        [(step_bare, f) for f in ("content_id", "labels", "action", "confidence", "reasoning", "policy_citations",
                                  "metadata", "episode_id", "unknown_field")]


@pytest.mark.parametrize("door,field", DOORS, ids=[f"{d.__name__}.{f}" for d, f in DOORS])
def test_each_top_level_field_refuses_surrogates_huge_and_wrong_values(client, door, field):
    for kind, s in SURROGATES.items():
        r = door(client, field, s)
        refused(r)
        assert "surrogate" in r.json()["detail"], (kind, r.text)
        refused(door(client, field, [s]))
        refused(door(client, field, {s: 1}))
    refused(door(client, field, BIG), big=True)
    refused(door(client, field, "Y" * 5000))  # under the body cap, over the field's
    for value in WRONG_TYPES + FORMAT_ONLY + ["", " ", "\x00", "nope"]:
        r = door(client, field, value)  # a valid value is answered; anything else is a short 4xx
        assert r.status_code == 200 or (400 <= r.status_code < 500 and len(r.content) < 2500), (value, r.status_code)


@pytest.mark.parametrize("field", ["episode_id", EPISODE_HEADER, EPISODE_COOKIE])
def test_state_and_sessions_refuse_bad_episode_names(app, field):
    bad = ["%ED%A0%80", "%ED%B0%80%ED%A0%80", "%E2%80%8B", "x" * 30_000, "a b", "../x", "%00", ""]
    for value in bad:
        client = TestClient(app, raise_server_exceptions=False)
        if field == "episode_id":
            r = client.get(f"/state?episode_id={value}")
        elif field == EPISODE_HEADER:
            r = client.get("/state", headers={field: value.replace("%", "\\") or " "})
        else:
            client.cookies.set(field, value)
            r = client.get("/state")
        assert r.status_code in (404, 422) or (value == "" and r.status_code == 200), (value[:20], r.status_code)
        assert len(r.content) < 2500 and "xxxxxxxxxx" not in r.text
        r = client.delete(f"/sessions/{value or '%20'}")
        assert 400 <= r.status_code < 500 and len(r.content) < 2500 and "xxxxxxxxxx" not in r.text


def test_header_bytes_that_are_not_ascii_are_refused(client):
    for value in (b"\xed\xa0\x80", b"\xff\xfe", b"\xe2\x80\x8b"):
        r = client.get("/state", headers=[(EPISODE_HEADER.encode(), value)])
        refused(r)
        obs = open_episode(client)
        r = client.post("/step", json=action_for(obs), headers=[(EPISODE_HEADER.encode(), value)])
        refused(r)


@pytest.mark.parametrize("route", ["/reset", "/step"])
def test_bodies_that_are_not_clean_json_are_refused(client, route):
    for body, status in [(b"x" * (MAX_BODY_BYTES + 1), 413), (b'{"task": "\xff"}', 400), (b'{"seed": NaN}', 400),
                         (b'{"seed": Infinity}', 400), (b'{"seed": 1e999}', 400),
                         (b'{"seed": ' + b"9" * 5000 + b"}", 400),
                         (b'{"task": "a", "task": "b"}', 400), (b"[" * 5000 + b"]" * 5000, 400),
                         (b'{"a":' * 100 + b"1" + b"}" * 100, 400), (b"{", 400), (b"[1, 2]", 422), (b'"x"', 422),
                         (b"null", 422 if route == "/step" else 200), (b"\xed\xa0\x80", 400)]:
        r = client.post(route, content=body, headers={"content-type": "application/json"})
        if status == 200:
            assert r.status_code in (200, 422)
            continue
        assert r.status_code == status, (route, body[:30], r.status_code, r.text[:200])
        refused(r)


def test_a_20_mb_content_id_is_refused_without_echo(client):
    obs = open_episode(client)
    big = action_for(obs, content_id="Z" * 20_000_000)
    r = client.post("/step", json={"episode_id": obs["episode_id"], "action": big})
    assert r.status_code == 413 and "ZZZZ" not in r.text and len(r.content) < 200
    r = client.post("/step", json={"episode_id": obs["episode_id"],
                                   "action": action_for(obs, content_id="Z" * 20_000)})
    assert r.status_code == 422 and "at most 128 characters" in r.json()["detail"]["message"] and "ZZZZ" not in r.text
    assert client.get("/state", params={"episode_id": obs["episode_id"]}).json()["step_count"] == 0


def test_websocket_refuses_bad_messages_and_keeps_the_session(client):
    with client.websocket_connect("/ws") as ws:
        ws.send_text('{"type": "reset", "data": {"task": "single-label-classify", "seed": 4}}')
        obs = ws.receive_json()["data"]["observation"]
        for bad in ('{"type": "step", "data": {"content_id": "\\udc00\\ud800", "labels": ["clean"]}}',
                    '{"type": "reset", "data": {"task": "\\ud800"}}', '{"type": "state", "type": "reset"}',
                    '{"type": "step", "data": {"reasoning": "' + "Z" * 70_000 + '"}}', '{"type": "state", "x": NaN}'):
            ws.send_text(bad)
            error = ws.receive_json()
            assert error["type"] == "error" and "refused" in error["data"]["message"]
            assert len(json.dumps(error)) < 600
        ws.send_text(json.dumps({"type": "step", "data": action_for(obs)}))
        assert ws.receive_json()["data"]["observation"]["step"] == 1


def test_reset_fields_say_which_is_wrong(client):
    for body, words in [({"seed": True}, "seed"), ({"seed": "4"}, "seed"), ({"seed": 4.5}, "seed"),
                        ({"seed": -1}, "greater than or equal to 0"), ({"seed": 2**64}, "less than or equal"),
                        ({"task": "nope"}, "unknown task 'nope'"), ({"taks": "x"}, "taks: Extra inputs"),
                        ({"task": "\u200b"}, "unknown task '\\u200b'")]:
        r = client.post("/reset", json=body)
        assert r.status_code == 422 and words in r.json()["detail"], (body, r.text)
    assert client.post("/reset", json={"seed": 4}).status_code == 200
    assert client.post("/reset").status_code == 200  # no body: defaults, as in OpenEnv
