"""The LLM transport layer: one copy of how this project talks to a model API.

Used by the generation backends (``components/generation``) and the moderation environment's
Claude and local-LLM agents (``moderation_env/agents.py``):

- ``anthropic_client``: Claude through the ``anthropic`` SDK (key from the environment, base URL,
  one request, Message Batches).
- ``openai_compatible``: any OpenAI-compatible chat-completions server over httpx.
- ``retry``: bounded retries of transient errors (429, 5xx, overloaded, timeouts, connection
  errors) with exponential backoff and full jitter, honouring ``retry-after``.
- ``ratelimit``: requests- and tokens-per-minute limits and a concurrency cap.
- ``errors``: what a caller catches (a missing key, an endpoint that kept failing).
- ``usage``: token accounting and USD cost.

Callers write their own request bodies and read their own answers; this layer only builds the
client, sends one request, classifies and retries failures and counts tokens. The defaults below
are the project's only copy (here, so reading them imports no SDK): ``generate.claude.model`` in
params.yaml and the environment's Claude agent use ``DEFAULT_CLAUDE_MODEL``.
"""

DEFAULT_CLAUDE_MODEL = "claude-sonnet-4-6"
# llama.cpp's server; Ollama: http://127.0.0.1:11434/v1, vLLM: http://127.0.0.1:8000/v1.
DEFAULT_LOCAL_BASE_URL = "http://127.0.0.1:8080/v1"
DEFAULT_LOCAL_MODEL = "local-model"  # llama.cpp serves one model whatever the name
