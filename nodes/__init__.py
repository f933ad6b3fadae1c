"""ComfyUI nodes of the VidSeg pack: thin wrappers over ``vidseg_core``."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
