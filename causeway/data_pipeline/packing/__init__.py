"""Packing: examples into rows (`rows`: in order with splitting, or best fit over a window)
and rows into batch arrays (`arrays`)."""
