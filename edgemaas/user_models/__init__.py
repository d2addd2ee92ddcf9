"""edgemaas.user_models"""
