"""An OpenEnv environment in which any moderator (the pipeline's classifier, Claude, a local LLM,
an RL policy) is scored on moderation work: see environment.py (tasks), graders.py (rewards),
server.py (HTTP/WebSocket), client.py, agents.py, trl_adapter.py."""
