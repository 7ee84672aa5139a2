"""Token and tile accounting shared by the data builder and the trainer.

`v2pe_data` and `v2pe_train` never import each other. What they must agree on (how an image is tiled,
how a conversation becomes token ids, how lengths are written, what a record looks like) lives here,
so the length a sample's meta promises is the length the loader produces, by construction.
"""
