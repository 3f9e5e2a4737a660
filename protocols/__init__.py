"""What is computed: the protocol contract (api.py), its building blocks (blocks/), the
registry of protocols (registry.py) and smpc's own protocols, one folder per family."""
