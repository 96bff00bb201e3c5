print("placeholder: dsm-check scenarios are being written")
