"""The light half of spctl: the worker shim, the msgpack-rpc codec and the author-facing API.

Nothing here imports ``supervisor``; nothing heavier than the standard library and msgpack
is imported until the extension a worker hosts asks for it.
"""
