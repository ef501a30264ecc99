#!/usr/bin/env python
"""Print the environment (same as python -m imagescore_det.env)."""
from imagescore_det.env import main

if __name__ == "__main__":
    main()
