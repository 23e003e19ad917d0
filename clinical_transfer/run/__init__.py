"""Orchestration: the only package that orders the stages of a run (see ARCHITECTURE.md).

``run.overlay.run_overlay`` is the main job; ``run.commands`` holds every CLI verb as a function;
``run.models`` resolves encoder, SAE and device once; ``run.config`` loads and validates run configs.
Submodules are imported where used, so importing this package stays cheap.
"""
