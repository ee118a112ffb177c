"""Example scripts. A regular package, so ``examples.train`` always resolves to this tree
(an ``examples`` directory installed by some third-party wheel must not shadow it)."""
