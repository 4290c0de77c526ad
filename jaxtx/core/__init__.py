"""jaxtx core: the bottom layer every library builds on.

Beam helpers, file and glob expansion, settings (working folder, tracking URI,
artifact root), numerics shared by the analyzers, and the exported-model
format. Modules here import nothing from the rest of jaxtx.
"""
