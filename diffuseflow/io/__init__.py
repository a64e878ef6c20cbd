"""File formats: DIALS experiment lists, detector images, mdx2-layout NeXus files."""
