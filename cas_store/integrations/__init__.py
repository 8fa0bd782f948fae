"""Adapters that put agent frameworks' session state on cas-store.

Each module imports its framework; import it only with its extra installed:
``cas_store.integrations.langgraph`` (``cas-store[langgraph]``) and
``cas_store.integrations.openai_agents`` (``cas-store[openai-agents]``). The engine never
imports this package.
"""
