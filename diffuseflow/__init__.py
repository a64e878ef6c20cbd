"""diffuseflow: the front half of diffuse-scattering reduction (import, Bragg peak masking,
background binning) as a Snakemake workflow, compatible with mdx2's files."""

__version__ = "0.1.0"

#: The mdx2 release whose NeXus layouts diffuseflow writes.
MDX2_VERSION = "1.0.5"
