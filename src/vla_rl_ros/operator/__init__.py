"""The operator's tools at an arm: `vla-rl operator` (operator.tool), a terminal for labels, resets and aborts."""
