"""Your own video: reading and resizing it, the ``run`` job, and the Plotly 3D views."""
