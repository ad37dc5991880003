"""Pathology Explorer's Streamlit frame and shared UI helpers (pages -> app -> core)."""
