"""Serving: the orchestrator behind an OpenAI-compatible API (`app`), a local model behind the same API
(`model_server`), and run folders as Parquet rows and viewer pages (`runs`, `viewer`). See docs/serving.md."""
