"""TerraTorch ``custom_modules_path`` plugin: importing it registers ``backbone: geofm_hf``.

TerraTorch imports this folder by name (its parent goes on ``sys.path``); the folder holds
nothing else, so no other module name can be shadowed by that.
"""

from geofm_hf.interop.terratorch import register

register()
