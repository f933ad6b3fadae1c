"""Developer tools of the VidSeg pack (workflow building, ComfyUI checks); not imported by ComfyUI."""
