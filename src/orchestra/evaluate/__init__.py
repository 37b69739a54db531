"""orchestra.evaluate"""
