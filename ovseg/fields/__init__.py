"""Language fields: 3D Gaussians with a language latent, a pure-PyTorch rasterizer, posed
images in COLMAP and nerfstudio formats, and text queries in any view (LangSplat-style)."""
