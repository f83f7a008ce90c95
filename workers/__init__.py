"""Mnemo's arq worker: turns recorded exchanges into memories."""
