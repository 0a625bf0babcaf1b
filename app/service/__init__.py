"""The streaming service: the Faust app factory, the ingest and availability agents, and the worker entry point.

    from app.service.app import build_service, create_app
    python -m app.service.worker
"""
