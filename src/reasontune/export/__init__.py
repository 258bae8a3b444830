"""Folders and files that load outside reasontune: adapter folders with their chat template and format
(portable.py), the merged model (merged.py), GGUF files (gguf.py, our writer), llama.cpp's quantizer and the
Ollama Modelfile (llamacpp.py), and the importance matrix it can quantize with (imatrix.py).

A chain, not a cycle: imatrix imports gguf and llamacpp; neither imports it. The `reasontune export` verb that
drives them is the stage stages/export.py.
"""
