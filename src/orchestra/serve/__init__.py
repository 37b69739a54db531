"""orchestra.serve"""
