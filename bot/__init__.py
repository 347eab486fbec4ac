"""memberbot runtime: settings, CLI, app factory, worker and the chat dialog engine."""
