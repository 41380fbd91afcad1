"""The production topology: docker-compose.yml for a team's servers, local.py for the same servers on 127.0.0.1."""
